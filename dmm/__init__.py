"""Machine unlearning by Datamodel Matching."""
