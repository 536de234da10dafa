/* SHA-256 (FIPS 180-4): module images are known to the host by their digest. */
#ifndef KVMGPU_SHA256_H
#define KVMGPU_SHA256_H

#include <stddef.h>
#include <stdint.h>

void kvmgpu_sha256(const void *data, size_t len, uint8_t digest[32]);

#endif
