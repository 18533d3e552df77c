"""Front-end chip drivers, one module per part."""
