"""The version of layerprobe (a module of its own, so that any package can read it without importing the
package root)."""

__version__ = "0.1.0"
