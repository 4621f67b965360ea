"""The protocol front ends; each receives the :class:`serving.dataplane.DataPlane`."""
