"""The app description (cpsysd.toml): the field table, the model, parsing, write-back."""
