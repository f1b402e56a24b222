"""Golden images of every screen, and the command that (deliberately) rewrites them."""
