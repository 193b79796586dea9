"""The vocabulary: genre names and their spellings (``names``), the shipped genre > style
taxonomy (``taxonomy``, read from gtag/data/taxonomy.toml), the level-by-level decision over its
nodes (``hierarchy``) and how a chosen genre meets the genres a file already holds (``refine``).

Pure data and logic, no audio and no files but the taxonomy. Imports: nothing else of gtag.
"""
