"""The version of layerprobe (a module of its own, so that any package can read it without importing the
package root)."""

__version__ = "0.1.0"


def versions() -> dict[str, str]:
    """The versions of layerprobe, Python, torch and transformers in this process (what a run records
    about what produced it; imports torch)."""
    import platform

    import torch
    import transformers

    return {
        "layerprobe": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
