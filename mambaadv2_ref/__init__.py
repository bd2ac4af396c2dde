"""mambaadv2_ref: a small, readable PyTorch reference of MambaADv2.

The data path reads top to bottom through the sub-packages:

    scans      the state space scans (Mamba-1 S6, Mamba-2 SSD, Mamba-3), pure PyTorch,
               with mamba-ssm's GPU kernels as an optional fast path
    scanning   images to sequences: scan curves, directions, progressive plans
    blocks     HSS block, frequency-enhanced convolution, DSS module (and MambaAD's LSS)
    model      encoder, fusion bottleneck, decoder, anomaly map, the model factory
    data       MVTec-layout datasets and the embedded default dataset
    metrics    image and pixel metrics, AUPRO, mAD
    config     every setting: model names, ModelConfig, the tiny / small / paper table
    runtime    device, precision and seeds of a run
    checkpoint the file format (safetensors + JSON manifest)
    train / evaluate / predict / cli   the pipeline and the command line
    studies    the measurements behind the book (benchmarks, ablations, scaling, the live run)
    viz        plots and widgets used by the book (nothing in the pipeline imports them)
"""

__version__ = "0.1.0"
