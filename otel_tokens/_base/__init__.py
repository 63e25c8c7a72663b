"""What every room stands on: the `Usage` model, attribute names, meter specs, text cleaning,
warnings, key fingerprints, exit order.
"""
