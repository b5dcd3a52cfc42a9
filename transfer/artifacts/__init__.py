"""What the pipeline delivers: byte-stable .keras files, the exported classifier and the `predict` command."""
