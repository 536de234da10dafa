"""`from cuda import cuda` (cuda-python before 12.6): kvmgpu's forwarded driver API."""

import sys

import kvmgpu_guest.driver

sys.modules[__name__] = kvmgpu_guest.driver
