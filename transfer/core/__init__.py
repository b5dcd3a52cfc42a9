"""The core every stage uses: params, the command-line tail, signals, atomic files, progress, redaction,
manifests, the one image decoder and the Keras backend choice."""
