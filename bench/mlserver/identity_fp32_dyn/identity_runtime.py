"""MLServer's equivalent of bench/models/identity_fp32_dyn: returns INPUT0 as OUTPUT0."""

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Identity(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        inp = payload.inputs[0]
        return InferenceResponse(
            model_name=self.name, id=payload.id,
            outputs=[ResponseOutput(name="OUTPUT0", shape=inp.shape, datatype=inp.datatype, data=inp.data)])
