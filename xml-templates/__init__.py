"""kvmgpu's libvirt XML templates (jinja2), installed as the package kvmgpu.xml_templates.

Read them through importlib.resources (kvmgpu.domain.xml.template_text), never through a path
built from __file__: that works in a source tree, an editable install and a wheel alike.
"""
