"""The pieces of ``seremo score`` (the verb itself is :mod:`seremo.score`), one seam each.

    inputs      what is scored: a folder, prefix, glob or manifest; a manifest's rows
    featurise   stage 1, CPU tasks: decode, segment, features (one row per input)
    predict     stage 2: the shipped bundle and the Predictor (actors, or fused into stage 1)
    sink        stage 3: the sink and the driver's side of its commits (seremo.commit)
    report      the archive report, built afterwards from the Parquet written
"""
