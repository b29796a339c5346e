"""Data: the synthetic DiDeMo proxy (the offline default) and real DiDeMo (annotations, videos, CLIP features)."""
