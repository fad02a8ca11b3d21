"""Detection heads: dense (GFL) heads with their targets and losses."""
