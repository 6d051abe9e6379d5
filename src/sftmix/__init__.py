"""sftmix: what should your SFT data be made of?"""

__version__ = "0.1.0"
