from common.runtime import serve
from functions.resnet.app import app

serve(app)
