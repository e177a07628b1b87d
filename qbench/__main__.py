"""`python -m qbench ...` = `qbench ...`; also what `torchrun --nproc_per_node N -m qbench run ...` starts."""

from qbench.cli import main

main()
