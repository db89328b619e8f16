"""kame-desktop: a desktop voice companion built on KAME's tandem speech-to-speech architecture."""

__version__ = "0.1.0"
