"""`python -m layerprobe` runs the command line."""

from layerprobe.cli.app import main

main()
