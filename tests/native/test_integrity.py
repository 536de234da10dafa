"""The integrity check libcuda.so.1 computes for NVIDIA's runtime (guest-agent/libcuda/integrity.c):
its hash is RFC 1319's MD2, checked here against the RFC's own test vectors (a wrong byte of the
permutation table or of the algorithm changes every one of them). That the runtime accepts the
whole value is tests/guest/test_cudart.py's: a wrong one fails every runtime call with
cudaErrorSoftwareValidityNotEstablished."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIBCUDA = REPO / "guest-agent" / "libcuda"
HARNESS = r"""
#include <stdio.h>
#include <string.h>
#include "export.h"
int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        unsigned char d[16];
        kvmgpu_md2(argv[i], strlen(argv[i]), d);
        for (int j = 0; j < 16; j++)
            printf("%02x", d[j]);
        printf("\n");
    }
    uint64_t r[2];
    struct kvmgpu_integrity_env env = {0};
    kvmgpu_integrity_value(13000, 1, &env, r); /* the oldest form: a fixed value */
    printf("%016llx%016llx\n", (unsigned long long)r[0], (unsigned long long)r[1]);
    return 0;
}
"""

# RFC 1319, appendix A.5
VECTORS = {
    "": "8350e5a3e24c153df2275c9f80692773",
    "a": "32ec01ec4a6dac72c0ab96fb34c0b5d1",
    "abc": "da853b0d3f88d99b30283a69e6ded6bb",
    "message digest": "ab4f496bfb2a530b219ff33031fe06b0",
    "abcdefghijklmnopqrstuvwxyz": "4e8ddff3650292ab5a4108c3aa47940b",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789": "da33def2a42df13975352846c30338cd",
    "1234567890" * 8: "d5976f79d83d3a0dc9806c3c66f3efd8",
}


def test_md2_gives_the_rfc_digests(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    src = tmp_path / "md2.c"
    src.write_text(HARNESS)
    exe = tmp_path / "md2"
    subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-pthread", "-I", str(LIBCUDA), "-I",
                    str(REPO / "guest-agent" / "include"), str(src), str(LIBCUDA / "integrity.c"), "-o", str(exe)],
                   check=True)
    out = subprocess.run([str(exe), *VECTORS], capture_output=True, text=True, check=True).stdout.split()
    assert out[:-1] == list(VECTORS.values())
    assert out[-1] == "3341181c03cb675c8ed383aa1f4cd1e8"
