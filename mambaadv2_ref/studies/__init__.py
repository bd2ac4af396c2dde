"""Studies: the measurements behind chapters 12 and 13, each a script that prints and saves JSON
and figures (never an assert on a timing).

    ablations         train + evaluate one model per ablation flag, one table of metrics and speed
    speed             bench_model (the training step of `train` and inference, images/s and peak
                      memory) per model, backend and precision
    scaling           decoder time and memory against resolution: SSM decoders vs an attention one
    scan_bench        the scans: sequential loop vs chunked (eager, compiled) vs mamba-ssm
    pipeline_runs     train + evaluate mambaadv2, mambaad and patchcore on one dataset (by the CLI)
    pipeline_results  collect those runs into pipeline_results.json / .md
    collect_gpu       unpack a GPU sitting's archive into the results files
    live_run          the short training run of chapters 11-12
    results           where results are committed (book/results/), the environment record,
                      reading them back

Each study exports `load_table(path) -> list[dict]` for its committed JSON;
`mambaadv2_ref.tables.markdown_table(rows)` renders any of them. Run one with
`python -m mambaadv2_ref.studies.<name> --help`.
"""
