"""Studies: the measurements behind chapters 12 and 13, each a script that prints and saves JSON
and figures (never an assert on a timing).

    ablations   train + evaluate one model per ablation flag, one table of metrics and speed
    speed       training / inference images/s and peak memory per model, backend and precision
    scaling     decoder time and memory against resolution: SSM decoders vs an attention one

Run one with `python -m mambaadv2_ref.studies.<name> --help`.
"""
