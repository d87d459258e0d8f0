/* tapegrad.h — the umbrella header: autograd, nn and optim. */
#ifndef TAPEGRAD_H
#define TAPEGRAD_H
#include "autograd.h"
#include "nn.h"
#include "optim.h"
#endif
