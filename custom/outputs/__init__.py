"""What inference writes: reconstructed CT files (NIfTI, DICOM, STL), the per-case saver, montages and bone renders."""
