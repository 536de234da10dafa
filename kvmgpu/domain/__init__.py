"""libvirt integration: the pure XML layer (`xml`), and the only module that calls libvirt (`host`)."""
