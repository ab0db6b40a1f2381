"""Data sources: CelebA and manifest readers, planted synthetic embeddings, the synthetic world."""
