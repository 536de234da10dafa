from guestvm import guest_image, guest_vm, libvirt_conn  # noqa: F401  (pytest fixtures)
