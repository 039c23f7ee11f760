"""The storage SOP classes and transfer syntaxes the node accepts, as received."""

from __future__ import annotations

from pydicom import uid

# Storage classes a chest radiograph arrives in: CR, DX (for presentation and processing),
# single- and multi-frame Secondary Capture (digitised films, exported images), and the
# general X-ray classes some modalities use for chest work.
STORAGE_SOP_CLASSES: tuple[str, ...] = (
    uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation,
    uid.DigitalXRayImageStorageForProcessing,
    uid.SecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    uid.MultiFrameTrueColorSecondaryCaptureImageStorage,
    uid.XRayRadiofluoroscopicImageStorage,
    uid.XRayAngiographicImageStorage,
)

TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ImplicitVRLittleEndian,
    uid.ExplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)
