"""Training for gtag: dataset readers, feature extraction, model fitting, evaluation and ONNX export.

Needs the ``train`` extra (torch, scikit-learn, skl2onnx, onnx). ``gtag`` itself never imports this.

Import picture: a module imports only from rows below its own, never from its row, so no trainer
imports another. ``tests/test_training_layout.py`` checks the whole picture (a module it does not
know is checked as a trainer); by hand, this lists only cli.py, chain.py and ensemble.py:
``grep -nE "from \\.(classic|cnn|wavenet|distil|transfer|musicnn_head|taxonomy|reference|musicnn_convert|musicnn_vgg) " training/*.py``

    cli            gtag-train: one command per module below, each imported when its command runs
    chain          gtag-train all: every trainer then the ensemble in a run folder, resumable, promote
    ensemble       the only module that combines models: train-only copies, vote weights, leave-one-out
                   (the only one that sets vote weights; training.export keeps them for the trainers)
    classic | cnn | wavenet | distil | transfer | musicnn_head | taxonomy | reference
    | musicnn_convert | musicnn_vgg
                   trainers side by side, one per model family: rf/knn; the log-mel CNN; the raw-audio
                   net, from scratch and distilled from musicnn; musicnn's export with a GTZAN head;
                   musicnn's head on GTZAN + a real library; the taxonomy's node scorers on musicnn's
                   MSD tags; the reference set gtag learn teaches as "none of these" (embeddings, no fit);
                   (not trainers, same row) musicnn's checkpoint conversion, proven against TensorFlow;
                   the port of musicnn's VGG checkpoints (MSD_vgg, MTT_vgg) with their conversion
    loop | musicnn_onnx | realworld
                   what trainers share: the neural-net training loop (fit, export, report);
                   musicnn's ONNX export (backbone + gtag.models.head head), CPU variant and checks; scoring
                   on a real library (also the `library-check` command)
    nets | musicnn | windows | tf_graph
                   the networks: CNN and WaveNet; musicnn's torch port and its converted weights;
                   the neural nets' training and validation windows (augmentations included);
                   a TF1 checkpoint's own graph, run frozen (the reference ports are proven against)
    extract | evaluate | export | runfolder
                   cached features, metrics (figures when matplotlib is there), ONNX + manifest +
                   licences; a run folder's snapshots, comparison table and promotion
    data           readers and splits

Speed measurements live in ``benchmarks/`` (``bench_musicnn.py``: the musicnn path against the CNN's).
"""
