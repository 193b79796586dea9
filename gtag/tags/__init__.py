"""The file's own metadata. One declarative table maps the genre to each container's tag
(``formats``, after beetbox/mediafile); ``reading`` and ``writing`` go through it, and a write works
on a hidden temporary copy that is verified before it replaces the original (``tempfiles``).
``genrefields`` reads and restores every field gtag may touch, ``riffinfo`` a WAV's INFO chunk, and
``content`` keys a file by its audio, not its tags.

Imports: nothing else of gtag.
"""
