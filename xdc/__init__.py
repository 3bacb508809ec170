"""XDC: Cross-Modal Deep Clustering for self-supervised audio-video learning (Alwassel et al., NeurIPS 2020).

Public API: `pretrain(cfg, tracker, out_dir=...)`, `evaluate(cfg, tracker, out_dir=...)`, `prepare(cfg, tracker,
out_dir=...)` (a clip store that trains faster), the config dataclasses, and the trackers. Heavy modules (torch,
MLflow) load on first use, so `import xdc` stays cheap for callers that only validate configs.
"""

__version__ = "0.1.0"

_LAZY = {
    "pretrain": "xdc.train",
    "PretrainResult": "xdc.train",
    "evaluate": "xdc.evaluation",
    "EvalConfig": "xdc.evaluation",
    "EvalResult": "xdc.evaluation",
    "prepare": "xdc.data.store",
    "PrepareConfig": "xdc.config",
    "PretrainConfig": "xdc.config",
    "load_config": "xdc.config",
    "MLflowTracker": "xdc.tracking",
    "NullTracker": "xdc.tracking",
    "XDCError": "xdc.errors",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xdc' has no attribute {name!r}")
