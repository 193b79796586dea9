"""gtag: tag a music library with genres predicted from the audio itself."""

__version__ = "0.1.0"
