"""Helpers shared by every test package (importable as ``support`` via pytest's pythonpath).

``support.tiny_engine`` builds the random-weight test engine; ``support.dicom_peers`` starts
real DICOM peers (storescp, Orthanc) and wraps the DICOM validators.
"""
