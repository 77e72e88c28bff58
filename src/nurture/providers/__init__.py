"""One folder per vendor (vertical slices); ``signing`` is shared by all."""
