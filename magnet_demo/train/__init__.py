"""Training for the embedded model: the rendered corpus, the attribute classifier, codec and LM."""
