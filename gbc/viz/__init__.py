"""Pictures of GBC graphs: graphs over their images, and statistics of graph sets."""
