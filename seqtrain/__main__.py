"""`python -m seqtrain` is the same CLI; torchrun launches workers this way."""

from seqtrain.cli import main

main()
