"""The kubitect plugin SDK: the one part of kubitect a plugin may import."""
