"""Position schemes computed once per forward and handed to layers through the context."""
