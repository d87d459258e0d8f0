#!/usr/bin/env python3
"""Writes the safetensors loader corpus into tests/data/safetensors/.

    python3 tests/data/make_malformed_safetensors.py

bad_*.safetensors must each be refused by ag_safetensors_load (the table in
tests/test_safetensors.c says with which status and message); good_*.safetensors
are valid corner cases that must load.  The files are committed, so the tests need
no Python; rerun this after changing it and commit the output.  Plain python3
(no numpy or torch) except good_st_py.safetensors, which comes from
tests/reference/st.py and is skipped with a note when numpy is missing.
"""
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'safetensors')


def f32(*xs):
    return struct.pack('<%df' % len(xs), *xs)


def f64(*xs):
    return struct.pack('<%dd' % len(xs), *xs)


def put(name, blob):
    with open(os.path.join(OUT, name + '.safetensors'), 'wb') as f:
        f.write(blob)


def raw(name, header, data=b'', hlen=None, pad=True):
    """header: dict (dumped as JSON), str or bytes; hlen overrides the length."""
    if isinstance(header, dict):
        header = json.dumps(header, separators=(',', ':'))
    if isinstance(header, str):
        header = header.encode()
    if pad:
        header += b' ' * (-len(header) % 8)
    n = len(header) if hlen is None else hlen
    put(name, struct.pack('<Q', n) + header + data)


def entry(dtype, shape, begin, end):
    return {'dtype': dtype, 'shape': shape, 'data_offsets': [begin, end]}


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.endswith('.safetensors') and old != 'good_st_py.safetensors':
            os.remove(os.path.join(OUT, old))
    six = f32(1, 2, 3, 4, 5, 6)
    ok = {'a': entry('F32', [2, 3], 0, 24)}

    # ---- framing: header length and file size
    put('bad_empty', b'')
    put('bad_7_bytes', b'\x08\x00\x00\x00\x00\x00\x00')
    raw('bad_header_past_end', ok, six, hlen=4096)
    raw('bad_header_len_huge', ok, six, hlen=2**63 + 5)
    raw('bad_header_len_over_cap', ok, six, hlen=100_000_001)
    raw('bad_header_len_zero', ok, six, hlen=0)

    # ---- JSON itself
    raw('bad_invalid_json', '{"a": {"dtype": "F32", ', six)
    raw('bad_json_trailing_garbage', '{} x')
    raw('bad_duplicate_names', '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', f32(1, 2))
    raw('bad_duplicate_metadata', '{"__metadata__":{"k":"v"},"__metadata__":{}}')
    raw('bad_header_array', '[1,2,3]')
    raw('bad_header_string', '"just a string"')
    raw('bad_invalid_utf8', b'{"\xff\xfe":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        f32(1))
    raw('bad_nul_in_name', '{"a\\u0000b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}',
        f32(1))
    raw('bad_deep_nesting', '{"__metadata__":{"k":' + '[' * 5000 + ']' * 5000 + '}}')
    raw('bad_integer_too_big', '{"a":{"dtype":"F32","shape":[100000000000000000000000],'
        '"data_offsets":[0,4]}}', f32(1))

    # ---- entries
    raw('bad_entry_not_object', {'a': 5}, f32(1))
    raw('bad_dtype_missing', {'a': {'shape': [1], 'data_offsets': [0, 4]}}, f32(1))
    raw('bad_dtype_not_string', {'a': {'dtype': 32, 'shape': [1], 'data_offsets': [0, 4]}},
        f32(1))
    raw('bad_dtype_f16', {'a': entry('F16', [2], 0, 4)}, f32(1))
    raw('bad_dtype_i64', {'a': entry('I64', [1], 0, 8)}, f64(1))
    raw('bad_dtype_bf16', {'a': entry('BF16', [2], 0, 4)}, f32(1))
    raw('bad_dtype_unknown', {'a': entry('Q7', [1], 0, 4)}, f32(1))
    raw('bad_dtype_lowercase', {'a': entry('f32', [1], 0, 4)}, f32(1))
    raw('bad_shape_missing', {'a': {'dtype': 'F32', 'data_offsets': [0, 4]}}, f32(1))
    raw('bad_shape_not_array', {'a': entry('F32', 4, 0, 4)}, f32(1))
    raw('bad_shape_negative', {'a': entry('F32', [-1, 2], 0, 0)})
    raw('bad_shape_float', {'a': entry('F32', [2.0], 0, 8)}, f32(1, 2))
    raw('bad_shape_string', {'a': entry('F32', ['2'], 0, 8)}, f32(1, 2))
    raw('bad_shape_9_dims', {'a': entry('F32', [1] * 9, 0, 4)}, f32(1))
    raw('bad_shape_overflow', {'a': entry('F32', [2**31, 2**31, 2**31], 0, 4)}, f32(1))
    raw('bad_shape_overflow_bytes', {'a': entry('F64', [2**61], 0, 8)}, f64(1))
    raw('bad_shape_size_mismatch', {'a': entry('F32', [2, 3], 0, 20)}, f32(1, 2, 3, 4, 5))
    raw('bad_dtype_size_mismatch', {'a': entry('F64', [2, 3], 0, 24)}, six)
    raw('bad_offsets_missing', {'a': {'dtype': 'F32', 'shape': [1]}}, f32(1))
    raw('bad_offsets_not_array', {'a': {'dtype': 'F32', 'shape': [1], 'data_offsets': 0}},
        f32(1))
    raw('bad_offsets_three', {'a': {'dtype': 'F32', 'shape': [1], 'data_offsets': [0, 4, 8]}},
        f32(1, 2))
    raw('bad_offsets_float', {'a': entry('F32', [1], 0, 4.0)}, f32(1))
    raw('bad_offsets_negative', {'a': entry('F32', [1], -4, 0)}, f32(1))
    raw('bad_offsets_reversed', {'a': entry('F32', [1], 4, 0)}, f32(1))
    raw('bad_offsets_out_of_range', {'a': entry('F32', [2], 0, 8)}, f32(1))
    raw('bad_offsets_huge', {'a': entry('F32', [1], 2**63 - 5, 2**63 - 1)}, f32(1))

    # ---- how the offsets tile the data section
    two = {'a': entry('F32', [2, 3], 0, 24), 'b': entry('F64', [2], 24, 40)}
    raw('bad_truncated_data', two, six + f64(7, 8)[:9])
    raw('bad_offsets_overlap', {'a': entry('F32', [2], 0, 8), 'b': entry('F32', [2], 4, 12)},
        f32(1, 2, 3))
    raw('bad_offsets_gap', {'a': entry('F32', [1], 0, 4), 'b': entry('F32', [1], 8, 12)},
        f32(1, 2, 3))
    raw('bad_offsets_not_from_zero', {'a': entry('F32', [1], 4, 8)}, f32(1, 2))
    raw('bad_offsets_same_range', {'a': entry('F32', [1], 0, 4), 'b': entry('F32', [1], 0, 4)},
        f32(1))
    raw('bad_trailing_data', ok, six + b'\0\0\0\0')

    # ---- metadata
    raw('bad_metadata_not_object', {'__metadata__': ['k', 'v']})
    raw('bad_metadata_non_string', {'__metadata__': {'epoch': 3}})
    raw('bad_metadata_null', {'__metadata__': {'k': None}})

    # ---- valid corner cases
    raw('good_empty_header', {})
    raw('good_unpadded', {'a': entry('F32', [1], 0, 4)}, f32(1.5), pad=False)
    raw('good_extra_fields', {'a': dict(entry('F32', [1], 0, 4), extra='ignored')}, f32(2.5))
    raw('good_header_order_differs', {'b': entry('F64', [1], 8, 16), 'a': entry('F64', [1], 0, 8)},
        f64(1, 2))
    raw('good_zero_size', {'e1': entry('F32', [0], 0, 0), 'x': entry('F32', [1], 0, 4),
                           'e2': entry('F64', [3, 0, 2**40], 4, 4),
                           '__metadata__': {}}, f32(3))
    try:
        sys.path.insert(0, os.path.join(HERE, '..', 'reference'))
        import numpy as np
        import st
    except ImportError as e:
        print('note: %s; good_st_py.safetensors not rewritten' % e)
    else:
        st.write(os.path.join(OUT, 'good_st_py.safetensors'),
                 {'fc1.weight': np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
                  'fc1.bias': np.array([-1.0, 0.5], dtype=np.float64),
                  'scale': np.array(3.0, dtype=np.float32)},
                 metadata={'format': 'pt', 'epoch': 7})
    print('wrote %d files to %s' % (len(os.listdir(OUT)), OUT))


if __name__ == '__main__':
    main()
