"""Training primitives: ranking losses, output sampling, Adagrad with momentum, epoch loop."""
