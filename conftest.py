# Puts the repository root on sys.path so tests import utils/, data/, segmentation/, classification/.
