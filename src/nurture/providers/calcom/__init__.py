"""calcom provider."""
