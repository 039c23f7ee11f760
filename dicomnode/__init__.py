"""The network side of the reporting node: DICOM listener, spool, queue, SR writer, sender, CLI.

Never imports torch.
"""

__version__ = "0.1.0"
