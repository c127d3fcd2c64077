/** The tag-reading scene generator behind `chain-of-spot scenes` (see generate.ts). */
export {
  BOX_HALF,
  CENTRE_GRID,
  DIGIT_HEIGHT,
  MIN_TAG_DISTANCE,
  QUESTION_TEMPLATES,
  TAG_COLOURS,
  TAG_SIZE,
  questionFor,
  renderScene,
  writeScenes,
  type BackgroundKind,
  type SceneQuestion,
  type SceneTag,
  type TagColour,
  type WriteScenesOptions,
  type WriteScenesResult,
} from './generate';
export { SHAPES, type Shape } from './raster';
