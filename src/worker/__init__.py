"""The Geopera worker: connects to a kernel server, runs job plugins, and
registers their outputs over RegisterOutputs."""
