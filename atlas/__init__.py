"""AtlasVLA: a geometry-grounded vision-language-action policy and its training system."""

__version__ = "0.1.0"
