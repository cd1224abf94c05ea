"""Names in the official raw layouts, shared by the readers and the demo generator that imitates them."""

ISIC_INPUT_FOLDER = "ISIC2018_Task1-2_Training_Input"      # ISIC_<id>.jpg
ISIC_GT_FOLDER = "ISIC2018_Task1_Training_GroundTruth"     # ISIC_<id>_segmentation.png
ACDC_ZIP_PREFIX = "ACDC/database/training/"               # <patient>/<patient>_frameXX[_gt].nii.gz in the Creatis zip
