/* replay.c — the main() of every fuzz target's replayer: runs
 * LLVMFuzzerTestOneInput over the files and folders named on the command
 * line (a loader's committed corpus), so the targets also run as tests
 * without libFuzzer. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        perror(path);
        return 1;
    }
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    for (size_t k; buf && (k = fread(buf + n, 1, cap - n, fp)) > 0;) {
        n += k;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb)
                free(buf);
            buf = nb;
        }
    }
    fclose(fp);
    if (!buf)
        return 1;
    LLVMFuzzerTestOneInput(buf, n);
    free(buf);
    return 0;
}

int main(int argc, char **argv)
{
    int bad = 0, runs = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        DIR *dir = stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode) ? opendir(argv[i]) : NULL;
        if (!dir) {
            bad |= replay_file(argv[i]);
            runs++;
            continue;
        }
        char path[4096];
        for (struct dirent *e; (e = readdir(dir));) {
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (e->d_name[0] != '.' && stat(path, &sb) == 0 && S_ISREG(sb.st_mode)) {
                bad |= replay_file(path);
                runs++;
            }
        }
        closedir(dir);
    }
    printf("%s: replayed %d inputs\n", argv[0], runs);
    return bad || runs == 0;
}
