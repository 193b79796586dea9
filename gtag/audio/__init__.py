"""Sound in: decoding a file to 22,050 Hz mono (``decode``, which holds the constants and their
derivations), the 3-second windows and the spans around them (``spans``), and every model input
computed from them: the GTZAN 57 features and the log-mel spectrogram (``features``, with numpy's
STFT and mel filterbank in ``dsp``) and musicnn's 16 kHz patches (``musicnn_input``).

``training`` imports these modules too, so features never drift between tagging and training.
Imports: nothing else of gtag.
"""
