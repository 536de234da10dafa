"""`from cuda.bindings import driver`: kvmgpu's forwarded driver API (kvmgpu_guest.driver)."""

import sys

import kvmgpu_guest.driver

sys.modules[__name__] = kvmgpu_guest.driver
