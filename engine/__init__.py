"""Engine runtime: turns chest radiograph pixel data into findings and Spanish report text.

Never imports pynetdicom. Meets ``training`` only through the artifact format
(:mod:`engine.artifact`) and shared preprocessing (:mod:`engine.preprocessing`).
"""

__version__ = "0.1.0"
