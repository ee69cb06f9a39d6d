"""cpt-embed: text and code embeddings by contrastive pre-training."""

from cpt_embed.model import Encoder, EncoderConfig

__version__ = "0.1.0"
__all__ = ["Encoder", "EncoderConfig", "__version__"]
